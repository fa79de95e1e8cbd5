// Parsing of schedule knob strings ("key:value,key:value": gengen forbids "=" inside a
// generator-param value), shared by every family's
// parameter struct. Knob strings are what the kernel list, the tuned tables and the
// tuner pass to a generator's `schedule` GeneratorParam.
#pragma once

#include <map>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace normgen::sched {

// One integer knob: its name, where it lives in the struct, its legal range, and the
// direction whose schedule reads it ("fwd", "bwd"; empty: every kernel of the family),
// so a search does not spend trials on knobs its kernel ignores.
template <typename P>
struct IntKnob {
    const char *name;
    int P::*field;
    int min_value;
    int max_value;
    const char *meaning;
    const char *used_by = "";
};

// Parse `text` into `p`, starting from p's current (default) values. Throws
// std::invalid_argument naming the bad knob.
template <typename P, size_t N>
void parse_knobs(const std::string &text, P &p, const IntKnob<P> (&knobs)[N]) {
    std::stringstream in(text);
    std::string item;
    while (std::getline(in, item, ',')) {
        if (item.empty()) continue;
        auto eq = item.find(':');
        if (eq == std::string::npos) throw std::invalid_argument("schedule knob '" + item + "' is not key:value");
        std::string key = item.substr(0, eq), value = item.substr(eq + 1);
        bool found = false;
        for (const auto &kb : knobs) {
            if (key != kb.name) continue;
            found = true;
            size_t used = 0;
            int v = 0;
            try {
                v = std::stoi(value, &used);
            } catch (const std::exception &) {
                used = 0;
            }
            if (used != value.size() || value.empty())
                throw std::invalid_argument("schedule knob '" + key + "' expects an integer, got '" + value + "'");
            if (v < kb.min_value || v > kb.max_value)
                throw std::invalid_argument("schedule knob '" + key + "'=" + value + " is outside [" +
                                            std::to_string(kb.min_value) + ", " + std::to_string(kb.max_value) + "]");
            p.*(kb.field) = v;
        }
        if (!found) throw std::invalid_argument("unknown schedule knob '" + key + "'");
    }
}

template <typename P, size_t N>
std::string format_knobs(const P &p, const IntKnob<P> (&knobs)[N]) {
    std::string s;
    for (const auto &kb : knobs) {
        if (!s.empty()) s += ',';
        s += std::string(kb.name) + ":" + std::to_string(p.*(kb.field));
    }
    return s;
}

}  // namespace normgen::sched
