"""The API's routes, one module per resource; ``serving.app`` joins their routers."""
