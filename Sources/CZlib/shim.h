#include <zlib.h>

// inflateInit is a macro (it passes zlib's version and z_stream's size), which Swift cannot call.
static inline int farm_inflate_init(z_streamp stream) {
    return inflateInit(stream);
}
