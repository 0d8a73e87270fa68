"""The demo data of cube3d, installed as the package ``cube3d.demo_data`` (see README.md)."""
