"""vidclip.data"""
