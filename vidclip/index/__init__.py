"""vidclip.index"""
