// libusb's header lives in a versioned include directory that pkg-config adds.
#include <libusb.h>
