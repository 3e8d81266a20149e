"""The paper models, each a short assembly of public headfields primitives."""
