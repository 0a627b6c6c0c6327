// Fake XRT runtime for tests (see README.md): host-memory buffers, kernels that only log their
// arguments and perform the writes scripted in $XRT_STUB_WRITES. Not XRT code.
#include "xrt/xrt_bo.h"
#include "xrt/xrt_device.h"
#include "xrt/xrt_kernel.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

FILE* log_file() {
    static FILE* f = [] {
        const char* p = std::getenv("XRT_STUB_LOG");
        return p ? std::fopen(p, "w") : nullptr;
    }();
    return f;
}

void logf(const std::string& line) {
    if (FILE* f = log_file()) {
        std::fprintf(f, "%s\n", line.c_str());
        std::fflush(f);
    }
}

int next_bo_id = 0;
int next_kernel_id = 0;

}  // namespace

namespace xrt_core {
class device {
public:
    unsigned index = 0;
};
}  // namespace xrt_core

namespace xrt {

class bo_impl {
public:
    int id = 0;
    memory_group group = 0;
    std::vector<char> data;
};

class kernel_impl {
public:
    int id = 0;
    std::string name;
};

class run_impl {
public:
    std::shared_ptr<kernel_impl> kernel;
    std::map<int, std::shared_ptr<bo_impl>> bos;
    ert_cmd_state state = ERT_CMD_STATE_NEW;
};

// ---- uuid ----
uuid::uuid() { std::memset(m_uuid, 0, sizeof(m_uuid)); }
uuid::uuid(const uuid& rhs) { std::memcpy(m_uuid, rhs.m_uuid, sizeof(m_uuid)); }
uuid& uuid::operator=(const uuid& rhs) {
    std::memcpy(m_uuid, rhs.m_uuid, sizeof(m_uuid));
    return *this;
}
std::string uuid::to_string() const { return "00000000-0000-0000-0000-000000000000"; }

// ---- device ----
device::device(unsigned int didx) : handle(std::make_shared<xrt_core::device>()) {
    handle->index = didx;
    logf("device " + std::to_string(didx));
}
device::device(const std::string& bdf) : device(0u) { logf("device_bdf " + bdf); }
uuid device::load_xclbin(const std::string& xclbin_fnm) {
    std::ifstream f(xclbin_fnm);
    if (!f) throw std::runtime_error("stub load_xclbin: no file " + xclbin_fnm);
    logf("load_xclbin " + xclbin_fnm);
    return uuid();
}
uuid device::get_xclbin_uuid() const { return uuid(); }
device::operator xclDeviceHandle() const { return handle.get(); }

// ---- bo ----
bo::bo(xclDeviceHandle dhdl, void* userptr, size_t sz, bo::flags flags, memory_group grp)
    : bo(dhdl, sz, flags, grp) {
    (void)userptr;
}
bo::bo(xclDeviceHandle dhdl, size_t size, bo::flags, memory_group grp) : handle(std::make_shared<bo_impl>()) {
    if (!dhdl) throw std::runtime_error("stub bo: no device");
    handle->id = next_bo_id++;
    handle->group = grp;
    handle->data.assign(size, static_cast<char>(0x5a));
    logf("bo " + std::to_string(handle->id) + " size " + std::to_string(size) + " group " + std::to_string(grp));
}
bo::bo(const bo& parent, size_t size, size_t offset) : handle(parent.handle) { (void)size, (void)offset; }
size_t bo::size() const { return handle->data.size(); }
uint64_t bo::address() const { return 0x1000ULL * static_cast<uint64_t>(handle->id + 1); }
void bo::sync(xclBOSyncDirection dir, size_t sz, size_t offset) {
    if (sz + offset > handle->data.size()) throw std::runtime_error("stub sync: out of range");
    logf("sync " + std::to_string(handle->id) + " " + std::to_string(static_cast<int>(dir)) + " " +
         std::to_string(sz) + " " + std::to_string(offset));
}
void* bo::map() { return handle->data.data(); }
void bo::write(const void* src, size_t size, size_t seek) {
    if (size + seek > handle->data.size()) throw std::runtime_error("stub write: out of range");
    std::memcpy(handle->data.data() + seek, src, size);
}
void bo::read(void* dst, size_t size, size_t skip) {
    if (size + skip > handle->data.size()) throw std::runtime_error("stub read: out of range");
    std::memcpy(dst, handle->data.data() + skip, size);
}

// ---- kernel ----
kernel::kernel(const xrt::device& device, const xrt::uuid&, const std::string& name, cu_access_mode)
    : handle(std::make_shared<kernel_impl>()) {
    if (!device) throw std::runtime_error("stub kernel: no device");
    handle->id = next_kernel_id++;
    handle->name = name;
    logf("kernel " + name + " " + std::to_string(handle->id));
}
kernel::kernel(xclDeviceHandle, const xrt::uuid&, const std::string& name, cu_access_mode)
    : handle(std::make_shared<kernel_impl>()) {
    handle->id = next_kernel_id++;
    handle->name = name;
}
int kernel::group_id(int argno) const {
    const int g = 1000 * handle->id + argno;  // distinct per (kernel, argument) so tests can trace it
    logf("group_id " + handle->name + " " + std::to_string(argno) + " " + std::to_string(g));
    return g;
}
std::string kernel::get_name() const { return handle->name; }

// ---- run ----
run::run(const kernel& krnl) : handle(std::make_shared<run_impl>()) { handle->kernel = krnl.get_handle(); }

void run::set_arg_at_index(int index, const void* value, size_t bytes) {
    std::ostringstream hex;
    const unsigned char* p = static_cast<const unsigned char*>(value);
    for (size_t i = 0; i < bytes; ++i) {
        static const char digits[] = "0123456789abcdef";
        hex << digits[p[i] >> 4] << digits[p[i] & 15];
    }
    logf("set_arg " + handle->kernel->name + " " + std::to_string(index) + " scalar " + std::to_string(bytes) +
         " " + hex.str());
}

void run::set_arg_at_index(int index, const xrt::bo& b) {
    handle->bos[index] = b.get_handle();
    logf("set_arg " + handle->kernel->name + " " + std::to_string(index) + " bo " +
         std::to_string(b.get_handle()->id));
}

void run::start() {
    logf("start " + handle->kernel->name);
    // scripted writes: "<kernel>:<arg>:v,v,...;..."
    if (const char* w = std::getenv("XRT_STUB_WRITES")) {
        std::stringstream all(w);
        std::string item;
        while (std::getline(all, item, ';')) {
            const auto a = item.find(':'), b = item.find(':', a + 1);
            if (a == std::string::npos || b == std::string::npos) continue;
            if (item.substr(0, a) != handle->kernel->name) continue;
            const int arg = std::stoi(item.substr(a + 1, b - a - 1));
            auto it = handle->bos.find(arg);
            if (it == handle->bos.end()) throw std::runtime_error("stub start: arg " + std::to_string(arg) + " is no bo");
            std::stringstream vals(item.substr(b + 1));
            std::string v;
            size_t off = 0;
            while (std::getline(vals, v, ',')) {
                const int32_t x = static_cast<int32_t>(std::stol(v));
                std::memcpy(it->second->data.data() + off, &x, sizeof(x));
                off += sizeof(x);
            }
        }
    }
    handle->state = ERT_CMD_STATE_COMPLETED;
}

ert_cmd_state run::wait(const std::chrono::milliseconds&) const { return handle->state; }
ert_cmd_state run::state() const { return handle->state; }

}  // namespace xrt
