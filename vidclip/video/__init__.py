"""vidclip.video"""
