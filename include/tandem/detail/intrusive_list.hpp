// tandem — intrusive doubly linked list. Layer: detail.
//
// Either side may be destroyed first: a list clears its nodes' links when it dies and a node
// unlinks itself when it dies. Loop teardown destroys suspended frames in arbitrary order
// (a mutex may die before the frame that waits on it), so this is not optional.
#pragma once

#include <cstddef>

namespace tandem::detail {

class list_hook {
public:
    list_hook() = default;
    list_hook(const list_hook&) = delete;
    list_hook& operator=(const list_hook&) = delete;
    ~list_hook() { unlink(); }

    bool linked() const noexcept { return m_next != nullptr; }
    void unlink() noexcept {
        if (!m_next) return;
        m_prev->m_next = m_next;
        m_next->m_prev = m_prev;
        m_prev = m_next = nullptr;
    }

private:
    template <class T> friend class intrusive_list;
    list_hook* m_prev = nullptr;
    list_hook* m_next = nullptr;
};

/// T must derive (publicly) from list_hook.
template <class T>
class intrusive_list {
public:
    intrusive_list() noexcept { m_head.m_prev = m_head.m_next = &m_head; }
    intrusive_list(const intrusive_list&) = delete;
    intrusive_list& operator=(const intrusive_list&) = delete;
    ~intrusive_list() {
        list_hook* h = m_head.m_next;
        while (h != &m_head) {
            list_hook* next = h->m_next;
            h->m_prev = h->m_next = nullptr;
            h = next;
        }
        m_head.m_prev = m_head.m_next = nullptr;
    }

    bool empty() const noexcept { return m_head.m_next == &m_head; }
    T& front() noexcept { return static_cast<T&>(*m_head.m_next); }

    void push_back(T& node) noexcept {
        list_hook& n = node;
        n.m_prev = m_head.m_prev;
        n.m_next = &m_head;
        m_head.m_prev->m_next = &n;
        m_head.m_prev = &n;
    }
    void push_front(T& node) noexcept {
        list_hook& n = node;
        n.m_next = m_head.m_next;
        n.m_prev = &m_head;
        m_head.m_next->m_prev = &n;
        m_head.m_next = &n;
    }
    T& pop_front() noexcept {
        T& n = front();
        static_cast<list_hook&>(n).unlink();
        return n;
    }
    /// Calls fn(T&) for each node; fn may unlink the node it is given.
    template <class F>
    void for_each(F&& fn) {
        list_hook* h = m_head.m_next;
        while (h != &m_head) {
            list_hook* next = h->m_next;
            fn(static_cast<T&>(*h));
            h = next;
        }
    }
    std::size_t size() const noexcept {
        std::size_t n = 0;
        for (const list_hook* h = m_head.m_next; h != &m_head; h = h->m_next) ++n;
        return n;
    }

private:
    list_hook m_head;
};

} // namespace tandem::detail
