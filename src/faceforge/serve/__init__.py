"""The REST service and its verify page: ``create_app(recognizer, gallery)`` (needs ``faceforge[serve]``).

See ``docs/serve.md``; ``faceforge serve --model M`` runs it under uvicorn.
"""

from faceforge.serve.app import create_app

__all__ = ["create_app"]
