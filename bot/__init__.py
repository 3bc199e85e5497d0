"""Brushwork's outer layer: the composition root, the command line and the Discord bot (the only
package that imports discord)."""
