"""Frozen backbones: timm RGB models, the Point-MAE point encoder and plain-torch point ops."""
from .point_mae import PointMAEEncoder, load_point_mae_weights, map_point_mae_state_dict
from .pointops import farthest_point_sampling, group_points, knn, three_nn_weights
from .rgb import RGBBackbone

__all__ = [
    "PointMAEEncoder", "RGBBackbone", "farthest_point_sampling", "group_points", "knn", "load_point_mae_weights",
    "map_point_mae_state_dict", "three_nn_weights",
]
