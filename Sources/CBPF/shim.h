#include <bpf/btf.h>
#include <bpf/libbpf.h>
#include <stdarg.h>
#include <stdio.h>

// btf_type keeps its size or referenced type in an anonymous union; Swift reads it through these.
static inline __u32 farm_btf_type_size(const struct btf_type *type) { return type->size; }
static inline __u32 farm_btf_type_ref(const struct btf_type *type) { return type->type; }

// libbpf reports why a parse failed only through its print callback (a printf format and a
// va_list, which Swift cannot take): keep the last warning so the thrown error can quote it.
// The buffer lives in a function: a header's static variable is not emitted for Swift.
static inline char *farm_libbpf_message(void) {
    static _Thread_local char message[512];
    return message;
}

// Debug level too: libbpf says why a BTF header is refused ("Invalid BTF magic") only at that level.
static inline int farm_libbpf_print(enum libbpf_print_level level, const char *format, va_list args) {
    (void)level;
    vsnprintf(farm_libbpf_message(), 512, format, args);
    return 0;
}

static inline void farm_libbpf_capture_messages(void) {
    libbpf_set_print(farm_libbpf_print);
}

static inline const char *farm_libbpf_last_message(void) { return farm_libbpf_message(); }
static inline void farm_libbpf_clear_message(void) { farm_libbpf_message()[0] = 0; }
