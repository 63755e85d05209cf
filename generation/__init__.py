"""Identity-conditioned generation: IP-Adapter FaceID on Stable Diffusion 1.5 / SDXL (diffusers),
with every output scored against the character. Importing this package does not import torch;
`loading` and `runner` import it when they run."""
