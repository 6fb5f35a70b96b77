"""model/adapters"""
