"""What only the scripts in tools/ share (an importing project needs none of it): argument and config
handling (config.py), the preflight check of data and weights (preflight.py), torchrun on CPUs
(dist.py), the toy sets' shape drawing (toy_shapes.py) and building a model from any config for the
analysis and deployment tools (model_input.py). Scripts put tools/ on sys.path to import it."""
