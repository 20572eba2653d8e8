"""optimisation"""
