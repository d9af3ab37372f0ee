"""Dataset pipeline: ingest (scenes → clip windows) and label (crops, pose, audio → shards).

Data code never imports model code.
"""
