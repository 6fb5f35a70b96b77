"""inference/http"""
