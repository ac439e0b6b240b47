"""This machine and the models on it: RAM, cores and GPUs, memory and speed estimates, the will-it-fit check."""
