"""The API's routers, mounted under /api/v1 by create_app()."""

from __future__ import annotations

from fastapi import APIRouter

from app.activities.router import router as activities_router
from app.checkins.router import router as checkins_router
from app.contributions.router import router as contributions_router
from app.identity.router import router as identity_router
from app.orgs.router import router as orgs_router
from app.reports.router import router as reports_router
from app.wechat.router import router as wechat_router

api_router = APIRouter()
api_router.include_router(identity_router)
api_router.include_router(orgs_router)
api_router.include_router(checkins_router)
api_router.include_router(activities_router)
api_router.include_router(wechat_router)
api_router.include_router(contributions_router)
api_router.include_router(reports_router)
