/* The plugin ABI is the header; this file only makes the C target buildable. */
#include "herald_plugin.h"
