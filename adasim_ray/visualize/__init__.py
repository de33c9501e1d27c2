"""The paper's pictures from run directories: Fig. 3's curves over epochs (``metrics``); Fig. 1's
supports are drawn by ``adasim_ray.figures.neighbours``. Plain PyTorch, numpy and matplotlib;
no Ray."""
