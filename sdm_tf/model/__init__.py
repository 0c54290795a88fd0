"""The SDM network: layers (one per module) and the model with its retrieval objective."""
