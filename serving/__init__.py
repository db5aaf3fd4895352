"""EmotiTrack serving: the Production model behind FastAPI, with a durable prediction log."""

VERSION = "0.1.0"
