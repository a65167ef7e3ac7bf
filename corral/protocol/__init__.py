"""The wire protocol's shared vocabulary: typed events, shared by api, services, brain and store.

It sits at the floor (it imports only `ids`), so every room can use it without an import against the grain.
"""
