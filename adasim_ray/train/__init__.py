"""The Ray layer around the engine: cache shard actors, Ray Data pair streams, the Train loop
and the driver. Import the submodules you need (``adasim_ray.train.run``); importing this
package does not import Ray."""
