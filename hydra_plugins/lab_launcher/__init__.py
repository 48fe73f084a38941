"""lab's Hydra launcher for one machine's GPUs: `python -m lab.run -m hydra/launcher=gpus ...`.

A sweep runs devices x jobs_per_device jobs at once, each in a fresh process that sees only its
own GPU (CUDA_VISIBLE_DEVICES=<one device>); see gpu_launcher.py and conf/hydra/launcher/gpus.yaml.
"""
