"""The stages of the data path, one job each (DESIGN.md, "The data path"); `gateway/pipeline.py` orders them."""
