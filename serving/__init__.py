"""The KServe predictor for driftloop models (see serving/model.py) and its entrypoints:

python -m serving --model_dir /mnt/models --model_name NAME     # the container
driftloop serve --model NAME [--version N | --alias production]  # on a laptop
"""
