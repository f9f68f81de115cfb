//! The room's working copy of its live's support and shop: who holds which badge, the payments
//! behind them, the pinned product, and product counters not yet stored. Loaded from the store
//! when the room opens; every change is stored before it lands here.

use crate::config::CommerceConfig;
use crate::protocol::{BadgeView, ProductView, SupportTotals, SupporterView, TierView};
use crate::store::PaymentRow;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Clicks of one identity on one product closer than this count once.
pub const CLICK_GAP: Duration = Duration::from_secs(2);
/// Click times kept for [`CLICK_GAP`] before old ones are pruned.
const CLICKS_KEPT: usize = 4096;

pub struct Commerce {
    config: Arc<CommerceConfig>,
    /// Payments not refunded, in the order they came.
    payments: Vec<PaymentRow>,
    /// The best tier each supporter holds.
    badges: HashMap<String, u8>,
    pinned: Option<ProductView>,
    /// Views and clicks per product since the last store write.
    pending: HashMap<String, (u64, u64)>,
    /// Last counted click per (identity, product).
    clicks: HashMap<(String, String), Instant>,
}

impl Commerce {
    pub fn new(config: Arc<CommerceConfig>, payments: Vec<PaymentRow>, pinned: Option<ProductView>) -> Self {
        let mut c = Self { config, payments: Vec::new(), badges: HashMap::new(), pinned, pending: HashMap::new(), clicks: HashMap::new() };
        for p in payments.into_iter().filter(|p| p.refunded_at.is_none()) {
            c.grant(p);
        }
        c
    }

    pub fn tier_name(&self, tier: u8) -> String {
        self.config.tiers.get(usize::from(tier).wrapping_sub(1)).map(|t| t.name.clone()).unwrap_or_default()
    }

    pub fn tiers(&self) -> Vec<TierView> {
        self.config
            .tiers
            .iter()
            .zip(1u8..)
            .map(|(t, tier)| TierView { tier, name: t.name.clone(), price_minor: t.price_minor, currency: self.config.currency.clone() })
            .collect()
    }

    pub fn badge(&self, identity: &str) -> Option<BadgeView> {
        self.badges.get(identity).map(|&tier| BadgeView { tier, name: self.tier_name(tier) })
    }

    fn best(&self, identity: &str) -> Option<u8> {
        self.payments.iter().filter(|p| p.identity == identity).map(|p| p.tier).max()
    }

    /// A payment lands (once: a payment already here changes nothing). Returns whether it was new.
    pub fn grant(&mut self, p: PaymentRow) -> bool {
        if self.payments.iter().any(|q| q.id == p.id) {
            return false;
        }
        let best = self.badges.get(&p.identity).copied().unwrap_or(0).max(p.tier);
        self.badges.insert(p.identity.clone(), best);
        self.payments.push(p);
        true
    }

    /// A payment was refunded: its identity and their badge now, when it was here.
    pub fn revoke(&mut self, payment: &str) -> Option<(String, Option<BadgeView>)> {
        let at = self.payments.iter().position(|p| p.id == payment)?;
        let p = self.payments.remove(at);
        match self.best(&p.identity) {
            Some(tier) => self.badges.insert(p.identity.clone(), tier),
            None => self.badges.remove(&p.identity),
        };
        let badge = self.badge(&p.identity);
        Some((p.identity, badge))
    }

    pub fn supporter(&self, p: &PaymentRow) -> SupporterView {
        SupporterView {
            payment: p.id.clone(),
            identity: p.identity.clone(),
            name: p.name.clone(),
            tier: p.tier,
            tier_name: self.tier_name(p.tier),
            amount_minor: p.amount_minor,
            currency: p.currency.clone(),
            at: p.received_at,
        }
    }

    pub fn supporters(&self) -> Vec<SupporterView> {
        self.payments.iter().map(|p| self.supporter(p)).collect()
    }

    pub fn totals(&self) -> SupportTotals {
        totals(&self.config.currency, self.payments.iter())
    }

    pub fn pinned(&self) -> Option<&ProductView> {
        self.pinned.as_ref()
    }

    /// Pin `product` (replacing any other); returns the one it replaced.
    pub fn pin(&mut self, product: ProductView) -> Option<ProductView> {
        self.pinned.replace(product)
    }

    pub fn unpin(&mut self) -> Option<ProductView> {
        self.pinned.take()
    }

    /// `n` more pages show the pinned product.
    pub fn viewed(&mut self, n: u64) {
        if let Some(p) = &self.pinned
            && n > 0
        {
            self.pending.entry(p.id.clone()).or_default().0 += n;
        }
    }

    /// A tap on the pinned product's button: counted unless the same identity tapped it less
    /// than [`CLICK_GAP`] ago. `false`: `product` is not pinned.
    pub fn click(&mut self, identity: &str, product: &str, now: Instant) -> bool {
        if self.pinned.as_ref().is_none_or(|p| p.id != product) {
            return false;
        }
        if self.clicks.len() >= CLICKS_KEPT {
            self.clicks.retain(|_, at| now.saturating_duration_since(*at) < CLICK_GAP);
        }
        let key = (identity.to_owned(), product.to_owned());
        if self.clicks.get(&key).is_some_and(|at| now.saturating_duration_since(*at) < CLICK_GAP) {
            return true;
        }
        self.clicks.insert(key, now);
        self.pending.entry(product.to_owned()).or_default().1 += 1;
        true
    }

    /// The counters to store: (product, views, clicks).
    pub fn take_pending(&mut self) -> Vec<(String, u64, u64)> {
        self.pending.drain().map(|(p, (v, c))| (p, v, c)).collect()
    }

    /// Counters the store did not take back in (a failed write is retried next time).
    pub fn restore_pending(&mut self, deltas: Vec<(String, u64, u64)>) {
        for (p, v, c) in deltas {
            let e = self.pending.entry(p).or_default();
            e.0 += v;
            e.1 += c;
        }
    }

    /// Counters not yet stored, for `product` (views, clicks).
    pub fn pending_of(&self, product: &str) -> (u64, u64) {
        self.pending.get(product).copied().unwrap_or_default()
    }
}

/// The totals of some payments (refunded ones are left out).
pub fn totals<'a>(currency: &str, payments: impl Iterator<Item = &'a PaymentRow>) -> SupportTotals {
    let mut t = SupportTotals { currency: currency.to_owned(), ..Default::default() };
    let mut who = HashSet::new();
    for p in payments.filter(|p| p.refunded_at.is_none()) {
        t.payments += 1;
        t.amount_minor += p.amount_minor;
        if let Some(n) = t.by_tier.get_mut(usize::from(p.tier).wrapping_sub(1)) {
            *n += 1;
        }
        who.insert(p.identity.as_str());
    }
    t.supporters = who.len() as u64;
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pay(id: &str, identity: &str, tier: u8) -> PaymentRow {
        PaymentRow {
            id: id.into(),
            live_id: "l".into(),
            room: "r".into(),
            identity: identity.into(),
            name: identity.to_uppercase(),
            tier,
            amount_minor: [99, 299, 499][usize::from(tier) - 1],
            currency: "USD".into(),
            received_at: 1,
            refunded_at: None,
        }
    }

    fn product(id: &str) -> ProductView {
        ProductView {
            id: id.into(),
            title: "T".into(),
            price_minor: 100,
            currency: "USD".into(),
            image_url: String::new(),
            checkout_url: "https://x.example/".into(),
        }
    }

    #[test]
    fn the_best_tier_is_the_badge_and_refunds_step_it_down() {
        let mut c = Commerce::new(Arc::new(CommerceConfig::default()), vec![pay("a", "ann", 1)], None);
        assert_eq!(c.badge("ann"), Some(BadgeView { tier: 1, name: "Supporter".into() }));
        assert!(c.grant(pay("b", "ann", 3)));
        assert!(!c.grant(pay("b", "ann", 3)), "the same payment twice is one");
        assert!(c.grant(pay("c", "bob", 2)));
        assert_eq!(c.badge("ann").map(|b| b.tier), Some(3));
        let t = c.totals();
        assert_eq!((t.payments, t.supporters, t.amount_minor, t.by_tier), (3, 2, 99 + 499 + 299, [1, 1, 1]));
        assert_eq!(c.revoke("b"), Some(("ann".into(), Some(BadgeView { tier: 1, name: "Supporter".into() }))));
        assert_eq!(c.revoke("a"), Some(("ann".into(), None)));
        assert_eq!(c.revoke("a"), None);
        assert_eq!(c.badge("ann"), None);
        assert_eq!(c.totals().amount_minor, 299);
    }

    #[test]
    fn refunded_payments_do_not_load() {
        let mut refunded = pay("a", "ann", 2);
        refunded.refunded_at = Some(5);
        let c = Commerce::new(Arc::new(CommerceConfig::default()), vec![refunded], None);
        assert_eq!(c.badge("ann"), None);
        assert_eq!(c.supporters().len(), 0);
    }

    #[test]
    fn clicks_count_once_per_gap_and_only_on_the_pin() {
        let mut c = Commerce::new(Arc::new(CommerceConfig::default()), vec![], None);
        let t0 = Instant::now();
        assert!(!c.click("ann", "p1", t0), "nothing pinned");
        c.pin(product("p1"));
        c.viewed(3);
        assert!(c.click("ann", "p1", t0));
        assert!(c.click("ann", "p1", t0 + Duration::from_millis(500)));
        assert!(c.click("bob", "p1", t0 + Duration::from_millis(500)));
        assert!(c.click("ann", "p1", t0 + CLICK_GAP));
        assert!(!c.click("ann", "p2", t0), "not the pinned product");
        assert_eq!(c.pending_of("p1"), (3, 3));
        let taken = c.take_pending();
        assert_eq!(taken, vec![("p1".to_string(), 3, 3)]);
        assert_eq!(c.pending_of("p1"), (0, 0));
        c.restore_pending(taken);
        assert_eq!(c.pending_of("p1"), (3, 3));
    }

    #[test]
    fn click_memory_is_bounded() {
        let mut c = Commerce::new(Arc::new(CommerceConfig::default()), vec![], Some(product("p")));
        let t0 = Instant::now();
        for i in 0..CLICKS_KEPT * 2 {
            c.click(&format!("u{i}"), "p", t0 + CLICK_GAP * (i as u32 / 1000));
        }
        assert!(c.clicks.len() <= CLICKS_KEPT + 1000, "{}", c.clicks.len());
    }
}
