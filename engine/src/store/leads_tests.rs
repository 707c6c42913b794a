//! The leads and cache contract as checks over `&dyn Store`, run by `tests.rs`'s `store_checks!`:
//! against a fresh SQLite file, and against a fresh Postgres database when
//! `ENRICHFLOW_TEST_DATABASE_URL` is set.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use enrichflow_nodes::leads::{ContactFields, LeadScore, LeadUpsert, OrganizationFields};
use serde_json::{Map, Value, json};

use super::tests::store_checks;
use super::{LeadDetail, LeadQuery, Store};

fn object(value: Value) -> Map<String, Value> {
    value.as_object().cloned().unwrap_or_default()
}

fn organization(domain: &str) -> OrganizationFields {
    OrganizationFields {
        domain: domain.to_owned(),
        name: None,
        industry: None,
        employees: None,
        revenue: None,
        country: None,
        data: Map::new(),
    }
}

/// A lead of `email` at the organisation of its domain, from run `run`, with nothing else.
fn upsert(email: &str, run: &str) -> LeadUpsert {
    let domain = email
        .split_once('@')
        .map(|(_, domain)| domain)
        .unwrap_or("");
    LeadUpsert {
        email: email.to_owned(),
        contact: ContactFields::default(),
        organization: Some(organization(domain)),
        source: None,
        status: None,
        tags: Vec::new(),
        score: None,
        run_id: run.to_owned(),
    }
}

fn score(total: f64, tier: &str) -> Option<LeadScore> {
    Some(LeadScore {
        total,
        tier: Some(tier.to_owned()),
        breakdown: json!({"engagement": {"score": total}}),
    })
}

async fn detail(store: &dyn Store, lead_id: &str) -> Result<LeadDetail> {
    store
        .lead(lead_id)
        .await?
        .with_context(|| format!("lead {lead_id} is missing"))
}

pub(super) async fn upsert_creates_then_updates(store: &dyn Store) -> Result<()> {
    let leads = store.services().leads;
    let first = leads.upsert_lead(&upsert("ada@acme.com", "r1")).await?;
    ensure!(first.created, "{first:?}");
    ensure!(first.organization_id.is_some());
    let second = leads.upsert_lead(&upsert("ada@acme.com", "r2")).await?;
    assert!(!second.created);
    assert_eq!(
        (&second.lead_id, &second.contact_id, &second.organization_id),
        (&first.lead_id, &first.contact_id, &first.organization_id)
    );
    let stored = detail(store, &first.lead_id).await?;
    assert_eq!(stored.view.lead.status, "new");
    assert_eq!(stored.view.lead.run_id.as_deref(), Some("r2"));
    assert_eq!(stored.view.contact.email, "ada@acme.com");
    let organization = stored.view.organization.context("an organization")?;
    assert_eq!(organization.domain, "acme.com");
    assert!(stored.view.lead.updated_at >= stored.view.lead.created_at);
    Ok(())
}

pub(super) async fn dedupes_by_email_and_domain(store: &dyn Store) -> Result<()> {
    let leads = store.services().leads;
    let ada = leads.upsert_lead(&upsert("ada@acme.com", "r1")).await?;
    let bob = leads.upsert_lead(&upsert("bob@acme.com", "r1")).await?;
    assert_eq!(ada.organization_id, bob.organization_id);
    assert_ne!(ada.contact_id, bob.contact_id);
    assert_ne!(ada.lead_id, bob.lead_id);
    let free_mail = LeadUpsert {
        organization: None,
        ..upsert("eve@gmail.com", "r1")
    };
    let eve = leads.upsert_lead(&free_mail).await?;
    assert_eq!(eve.organization_id, None);
    let page = store.list_leads(&LeadQuery::default()).await?;
    assert_eq!(page.len(), 3);
    assert_eq!(page[0].lead.id, eve.lead_id, "newest first");
    assert_eq!(page[0].organization, None);
    Ok(())
}

pub(super) async fn null_does_not_clobber(store: &dyn Store) -> Result<()> {
    let leads = store.services().leads;
    let full = LeadUpsert {
        contact: ContactFields {
            first_name: Some("Ada".into()),
            last_name: Some("Lovelace".into()),
            title: Some("CTO".into()),
            data: object(json!({"linkedin": "ada", "phone": "1"})),
        },
        organization: Some(OrganizationFields {
            name: Some("Acme".into()),
            industry: Some("Software".into()),
            employees: Some(250),
            revenue: Some(12_500_000.5),
            country: Some("DE".into()),
            data: object(json!({"founded": 1999})),
            ..organization("acme.com")
        }),
        source: Some("webhook".into()),
        status: Some("qualified".into()),
        score: score(81.5, "hot"),
        ..upsert("ada@acme.com", "r1")
    };
    let first = leads.upsert_lead(&full).await?;
    let sparse = LeadUpsert {
        contact: ContactFields {
            title: Some("CEO".into()),
            data: object(json!({"phone": null, "twitter": "@ada"})),
            ..ContactFields::default()
        },
        organization: Some(OrganizationFields {
            employees: Some(300),
            data: object(json!({"founded": null})),
            ..organization("acme.com")
        }),
        ..upsert("ada@acme.com", "r2")
    };
    leads.upsert_lead(&sparse).await?;
    let view = detail(store, &first.lead_id).await?.view;
    let contact = &view.contact;
    assert_eq!(contact.first_name.as_deref(), Some("Ada"));
    assert_eq!(contact.last_name.as_deref(), Some("Lovelace"));
    assert_eq!(contact.title.as_deref(), Some("CEO"));
    assert_eq!(
        Value::Object(contact.data.clone()),
        json!({"linkedin": "ada", "phone": "1", "twitter": "@ada"})
    );
    let organization = view.organization.context("an organization")?;
    assert_eq!(organization.name.as_deref(), Some("Acme"));
    assert_eq!(organization.industry.as_deref(), Some("Software"));
    assert_eq!(organization.employees, Some(300));
    assert_eq!(organization.revenue, Some(12_500_000.5));
    assert_eq!(organization.country.as_deref(), Some("DE"));
    assert_eq!(Value::Object(organization.data), json!({"founded": 1999}));
    assert_eq!(view.lead.source.as_deref(), Some("webhook"));
    assert_eq!(view.lead.status, "qualified");
    // No new score: the latest one stays.
    assert_eq!(
        (view.lead.score, view.lead.tier.as_deref()),
        (Some(81.5), Some("hot"))
    );
    Ok(())
}

pub(super) async fn tags_are_a_union(store: &dyn Store) -> Result<()> {
    let leads = store.services().leads;
    let tags = |tags: &[&str]| tags.iter().map(|tag| (*tag).to_owned()).collect();
    let first = LeadUpsert {
        tags: tags(&["webinar", "de"]),
        ..upsert("ada@acme.com", "r1")
    };
    let lead_id = leads.upsert_lead(&first).await?.lead_id;
    let second = LeadUpsert {
        tags: tags(&["de", "pricing"]),
        ..upsert("ada@acme.com", "r2")
    };
    leads.upsert_lead(&second).await?;
    leads.upsert_lead(&upsert("ada@acme.com", "r3")).await?;
    let lead = detail(store, &lead_id).await?.view.lead;
    assert_eq!(lead.tags, ["webinar", "de", "pricing"]);
    Ok(())
}

pub(super) async fn score_history_appends(store: &dyn Store) -> Result<()> {
    let leads = store.services().leads;
    let scored = |run: &str, total: f64, tier: &str| LeadUpsert {
        score: score(total, tier),
        ..upsert("ada@acme.com", run)
    };
    let lead_id = leads
        .upsert_lead(&scored("r1", 40.0, "cold"))
        .await?
        .lead_id;
    leads.upsert_lead(&scored("r2", 85.25, "hot")).await?;
    // The same run again (an attempt that ran twice) replaces its score.
    leads.upsert_lead(&scored("r2", 86.0, "hot")).await?;
    let stored = detail(store, &lead_id).await?;
    let history: Vec<(f64, Option<&str>, &str)> = stored
        .scores
        .iter()
        .map(|score| (score.total, score.tier.as_deref(), score.run_id.as_str()))
        .collect();
    assert_eq!(
        history,
        [(86.0, Some("hot"), "r2"), (40.0, Some("cold"), "r1")]
    );
    assert_eq!(
        stored.scores[1].breakdown,
        json!({"engagement": {"score": 40.0}})
    );
    assert_eq!(stored.view.lead.score, Some(86.0));
    assert_eq!(stored.view.lead.tier.as_deref(), Some("hot"));
    Ok(())
}

pub(super) async fn concurrent_upserts_of_one_email_give_one_lead(store: &dyn Store) -> Result<()> {
    let leads = store.services().leads;
    let upserts: Vec<LeadUpsert> = (0..8)
        .map(|n| LeadUpsert {
            tags: vec![format!("t{n}")],
            score: score(f64::from(n), "cold"),
            ..upsert("ada@acme.com", &format!("r{n}"))
        })
        .collect();
    let results =
        futures::future::join_all(upserts.iter().map(|lead| leads.upsert_lead(lead))).await;
    let results = results.into_iter().collect::<Result<Vec<_>, _>>()?;
    let created = results.iter().filter(|result| result.created).count();
    assert_eq!(created, 1, "{results:?}");
    let page = store.list_leads(&LeadQuery::default()).await?;
    assert_eq!(page.len(), 1);
    let stored = detail(store, &page[0].lead.id).await?;
    assert_eq!(stored.scores.len(), 8);
    assert_eq!(stored.view.lead.tags.len(), 8);
    Ok(())
}

pub(super) async fn list_leads_filters_and_pages(store: &dyn Store) -> Result<()> {
    let leads = store.services().leads;
    let mut ids = Vec::new();
    for (email, tier, status) in [
        ("a@one.com", "hot", None),
        ("b@two.com", "cold", Some("contacted")),
        ("c@one.com", "hot", Some("contacted")),
        ("d@three.com", "warm", None),
    ] {
        let lead = LeadUpsert {
            score: score(50.0, tier),
            status: status.map(str::to_owned),
            ..upsert(email, "r1")
        };
        ids.push(leads.upsert_lead(&lead).await?.lead_id);
    }
    let listed = |query: LeadQuery| async move {
        let page = store.list_leads(&query).await?;
        anyhow::Ok(
            page.into_iter()
                .map(|view| view.lead.id)
                .collect::<Vec<_>>(),
        )
    };
    let id = |n: usize| ids[n].clone();
    let tier = |tier: &str| LeadQuery {
        tier: Some(tier.into()),
        ..LeadQuery::default()
    };
    assert_eq!(listed(tier("hot")).await?, [id(2), id(0)]);
    let contacted = LeadQuery {
        status: Some("contacted".into()),
        ..LeadQuery::default()
    };
    assert_eq!(listed(contacted).await?, [id(2), id(1)]);
    let search = LeadQuery {
        search: Some("one.com".into()),
        ..LeadQuery::default()
    };
    assert_eq!(listed(search).await?, [id(2), id(0)]);
    let first_page = LeadQuery {
        limit: 3,
        ..LeadQuery::default()
    };
    assert_eq!(listed(first_page).await?, [id(3), id(2), id(1)]);
    let next_page = LeadQuery {
        limit: 3,
        cursor: Some(id(1)),
        ..LeadQuery::default()
    };
    assert_eq!(listed(next_page).await?, [id(0)]);
    assert_eq!(store.lead("no-such-lead").await?, None);
    Ok(())
}

pub(super) async fn cache_keeps_values_until_they_expire(store: &dyn Store) -> Result<()> {
    let cache = store.services().cache;
    let minute = Duration::from_secs(60);
    assert_eq!(cache.get("company", "acme.com").await?, None);
    cache
        .put("company", "acme.com", &json!({"name": "Acme"}), minute)
        .await?;
    cache
        .put("person", "acme.com", &json!(null), minute)
        .await?;
    assert_eq!(
        cache.get("company", "acme.com").await?,
        Some(json!({"name": "Acme"}))
    );
    assert_eq!(cache.get("person", "acme.com").await?, Some(json!(null)));
    cache
        .put("company", "acme.com", &json!({"name": "Acme Inc"}), minute)
        .await?;
    assert_eq!(
        cache.get("company", "acme.com").await?,
        Some(json!({"name": "Acme Inc"}))
    );
    cache
        .put("company", "gone.com", &json!(1), Duration::ZERO)
        .await?;
    assert_eq!(cache.get("company", "gone.com").await?, None);
    // A lifetime too long to represent is cut, not an error.
    cache
        .put("company", "forever", &json!(2), Duration::MAX)
        .await?;
    assert_eq!(cache.get("company", "forever").await?, Some(json!(2)));
    Ok(())
}

store_checks!(
    upsert_creates_then_updates,
    dedupes_by_email_and_domain,
    null_does_not_clobber,
    tags_are_a_union,
    score_history_appends,
    concurrent_upserts_of_one_email_give_one_lead,
    list_leads_filters_and_pages,
    cache_keeps_values_until_they_expire,
);
