"""The video tracker: a phone video turned into a capture every model trains on."""
