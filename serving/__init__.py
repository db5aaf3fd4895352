"""EmotiTrack serving: the Production model behind FastAPI, with a durable prediction log."""
