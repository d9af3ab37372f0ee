from emokit.cli import app

app()
