//! Values by index with freed slots reused, for tables that name their
//! entries by a 4-byte index instead of a pointer (the LPM writer's route
//! lists, the VPN RIB's attribute sets and lists).

/// Values by index; freed slots are reused.
#[derive(Debug)]
pub struct Slab<T> {
    items: Vec<T>,
    free: Vec<u32>,
}

impl<T> Default for Slab<T> {
    fn default() -> Self {
        Slab {
            items: Vec::new(),
            free: Vec::new(),
        }
    }
}

impl<T: Default> Slab<T> {
    /// Store `v`; its index.
    pub fn add(&mut self, v: T) -> u32 {
        match self.free.pop() {
            Some(i) => {
                self.items[i as usize] = v;
                i
            }
            None => {
                self.items.push(v);
                (self.items.len() - 1) as u32
            }
        }
    }

    /// Take the value at `i` out and free its slot (the default for an
    /// index never given).
    pub fn take(&mut self, i: u32) -> T {
        match self.items.get_mut(i as usize) {
            Some(v) => {
                self.free.push(i);
                std::mem::take(v)
            }
            None => T::default(),
        }
    }
}

impl<T> Slab<T> {
    /// The value at `i`.
    pub fn get(&self, i: u32) -> Option<&T> {
        self.items.get(i as usize)
    }

    /// The value at `i`, to change.
    pub fn get_mut(&mut self, i: u32) -> Option<&mut T> {
        self.items.get_mut(i as usize)
    }

    /// Slots, used and free.
    pub fn slots(&self) -> usize {
        self.items.len()
    }

    /// Free slots.
    pub fn free_slots(&self) -> usize {
        self.free.len()
    }

    /// Every slot's value (a free slot holds the default).
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.items.iter()
    }
}

impl<T> std::ops::Index<u32> for Slab<T> {
    type Output = T;
    fn index(&self, i: u32) -> &T {
        &self.items[i as usize]
    }
}

impl<T> std::ops::IndexMut<u32> for Slab<T> {
    fn index_mut(&mut self, i: u32) -> &mut T {
        &mut self.items[i as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn freed_slots_are_reused_and_taken_values_reset() {
        let mut s: Slab<Vec<u8>> = Slab::default();
        let a = s.add(vec![1]);
        let b = s.add(vec![2]);
        assert_eq!((a, b), (0, 1));
        assert_eq!(s.take(a), vec![1]);
        assert_eq!(s.get(a), Some(&vec![]));
        assert_eq!(s.free_slots(), 1);
        assert_eq!(s.add(vec![3]), a, "the freed slot first");
        assert_eq!(s[a], vec![3]);
        s[b].push(4);
        assert_eq!(s.get_mut(b).map(|v| v.len()), Some(2));
        assert_eq!(s.take(9), Vec::<u8>::new(), "an index never given");
        assert_eq!((s.slots(), s.free_slots()), (2, 0));
    }
}
