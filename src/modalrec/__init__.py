"""modalrec: does multimodal item content really help a recommender, and by how much?"""

from modalrec.errors import ModalrecError

__version__ = "0.1.0"
__all__ = ["ModalrecError", "__version__"]
