"""Video, audio and face processing that turns a talking-head video into a dataset."""
