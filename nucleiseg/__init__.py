"""nucleiseg: nucleus instance segmentation."""
