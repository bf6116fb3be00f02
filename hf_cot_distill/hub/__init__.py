"""Hub: model and dataset cards, dataset export and pushing folders. The only package that talks to the Hub."""
