"""The app's routes, one APIRouter per module; ``create_app`` includes them in this order (the OpenAPI order)."""
