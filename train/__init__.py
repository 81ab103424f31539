"""Training the flowup velocity network with Lightning (``python -m train --help``)."""
