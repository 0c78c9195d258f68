"""nerf."""
from nerf.background import Background, sh_encoding
from nerf.field import (ImplicitVolume, field_albedo, field_density, field_from_config,
                        field_outputs, make_density_fn, make_radiance_fn)
from nerf.hash_grid import HashGridEncoding
from nerf.material import (ALBEDO, DIFFUSE, TEXTURELESS, Shading, eval_shading, make_shading,
                           sample_shading, shade)
from nerf.mesh import box_corners, export_mesh, extract_mesh, grid_values, surface_mesh
from nerf.cameras import Camera, circle_cameras, generate_rays, look_at, random_camera
from nerf.occupancy import OccupancyGrid, init_grid, update_grid
from nerf.render import (FieldFns, render_composite, render_composite_complete, render_field,
                         render_field_complete)
from nerf.sampler import MarchConfig, Samples, fair_quota, sample_rays
