"""The avatar model: identity triplane, deltaplane U-Net, volume renderer, super-resolution."""
