"""pose."""
from pose.body_render import Cameras, look_at_cameras, orbit_cameras, rasterize, render_mesh
from pose.image_sheet import image_grid
