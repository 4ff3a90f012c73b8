"""Binance USD-M futures connectivity: signing, the REST client and the adapter."""
