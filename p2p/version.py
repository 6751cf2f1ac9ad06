"""The package's version, in a module of its own so that modules needing it do not import the
package root (whose API imports them)."""

__version__ = "0.1.0"
