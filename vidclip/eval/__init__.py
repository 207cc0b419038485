"""vidclip.eval"""
