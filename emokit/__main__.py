from emokit.cli import app

# Guarded: spawned worker processes import the main module under another name.
if __name__ == "__main__":
    app()
