"""Small helpers more than one room needs, with no dependency on the rest of the provider."""
