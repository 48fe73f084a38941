"""Entry point of image retrieval: python -m lab.retrieve index|query|evaluate (see lab.retrieval.cli)."""

import sys

from lab.retrieval.cli import main

if __name__ == "__main__":
    from lab.utils.shutdown import skip_final_collection

    skip_final_collection()
    sys.exit(main())
