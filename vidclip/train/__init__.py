"""vidclip.train"""
