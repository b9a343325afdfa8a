"""The REST service and its verify page: ``create_app(recognizer, gallery)`` (needs ``faceforge[serve]``);
``faceforge serve --model M`` runs it under uvicorn. Details: docs/serve.md.
"""

from faceforge.serve.app import create_app

__all__ = ["create_app"]
