"""nerf."""
from nerf.background import Background, sh_encoding
from nerf.field import (ImplicitVolume, field_from_config, field_outputs, make_density_fn,
                        make_radiance_fn)
from nerf.hash_grid import HashGridEncoding
from nerf.material import (ALBEDO, DIFFUSE, TEXTURELESS, Shading, eval_shading, make_shading,
                           sample_shading, shade)
from nerf.mesh import export_mesh, extract_mesh
