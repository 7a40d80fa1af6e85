"""Procedural multimodal action benchmark (numpy + OpenCV) in the NTU RGB+D and PKU-MMD layouts."""
