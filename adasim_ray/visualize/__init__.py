"""The paper's pictures from run directories: Fig. 3's curves over epochs (``metrics``) and
Fig. 1's supports with their sampling probabilities (``neighbours``). Plain PyTorch, numpy and
matplotlib; no Ray."""
