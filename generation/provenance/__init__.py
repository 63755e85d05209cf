"""Provenance of castkeep's outputs: an invisible watermark in the pixels (watermark.py), C2PA Content
Credentials signed with the user's certificate (credentials.py), both applied where an output PNG is
written (output.py), and what any image carries, read back (inspection.py). Importing this package imports
neither invisible-watermark nor c2pa; each loads when first used."""
